"""One module per kind: pure functions from a resource (and what was observed) to the children it should have.
No client calls: the Kopf handlers read, call these, apply and patch."""
