"""CLI glue: parse arguments, do the I/O, call the pure layers. The top layer of the operator."""
