Bcotangent_0JÑû…¿REw?êu?Rëù»Æ
@mìs¾