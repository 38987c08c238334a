"""State machines with a bookkeeping bug, written as dask's own tests would
patch one: importing a module changes ``distributed.worker_state_machine`` in
this process (and ``replay --import tests.patched.NAME`` replays through it).
``record.py`` records a real cluster running through each."""
