"""Pure format code: the on-disk layout, the codecs of catalog rows, the one row validator, metadata rules.

Nothing here touches a file or a database; every other layer builds on these definitions.
"""
