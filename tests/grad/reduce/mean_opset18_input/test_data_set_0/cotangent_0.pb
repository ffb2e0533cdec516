Bcotangent_0JMe7¾GÄ
?=q>