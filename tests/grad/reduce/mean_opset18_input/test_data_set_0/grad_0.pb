BxJ0Me7½Me7½Me7½Me7½GÄ
>GÄ
>GÄ
>GÄ
>=q==q==q==q=