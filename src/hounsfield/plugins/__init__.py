"""Python plugins (issue 14): plain Python files that ``serve`` loads, registering callbacks with the decorators
of ``plugins.api`` (events, filters, HTTP routes). ``loader`` runs the files, ``runner`` runs the events in a
bounded queue per plugin, ``host`` is what the composition root wires into the services."""
