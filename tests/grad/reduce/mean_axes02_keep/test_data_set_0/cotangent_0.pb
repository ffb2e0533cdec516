Bcotangent_0J6ô
:,Šc??¿`z@