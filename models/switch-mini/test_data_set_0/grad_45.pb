Bblocks.1.moe.router.biasJº:À©I¦Àkz
A!q
¿