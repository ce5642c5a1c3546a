"""From a configuration to a running element, and the process around it.

`ng911.elements` holds the elements and their policy; this package is what turns one of
their configurations into a running process: the one place that builds TLS contexts and
clients from a config (`build`), serving an element or LoST (`serve`), `ng911 run`
(`commands`), log routing (`logs`), worker processes (`workers`) and the collector tuning
of an element process (`memory`). It sits above `elements` and `observe`, below `testbed`.
"""
