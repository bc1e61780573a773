"""The SCU services: operations we invoke on the peer (C-ECHO, C-STORE, C-FIND, C-GET, C-MOVE)."""
