Bcotangent_0JH@ІЅ4U
?бtоїQдој