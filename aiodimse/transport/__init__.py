"""The asyncio glue: one transport connection, the PS3.8 state machine, DIMSE exchange.

:mod:`.link` is the only module that touches sockets; :mod:`.exchange` keeps the table of
outstanding operations and requests on top of it. Nothing here knows the DIMSE services.
"""
