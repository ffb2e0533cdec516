Bcotangent_0JÞõ
?	-A=L–Ó½