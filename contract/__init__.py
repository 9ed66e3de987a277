"""What every part of convlab shares, and nothing else: the contract between its processes.

- ``specs``: task names and the frozen specs a message's run carries (the only thing the orchestrator
  and the worker agree on about work);
- ``profiles``: the named sets of spec values (read by the plans and by the report's settings table);
- ``settings``: the one configuration object, read from the environment once;
- ``version``: the identity of the code that runs;
- ``host``: facts about the machine both sides describe (the CPU's name).

A leaf: it imports nothing from ``storage``, ``worker``, ``orchestrator`` or ``report``.
"""
