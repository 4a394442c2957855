"""The heterogeneous graph of MNER-QG: schema and vectorised batch construction."""
