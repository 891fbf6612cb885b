"""Execution: the paper venue, the portfolio it keeps, costs, and the journal."""
