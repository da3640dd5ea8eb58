"""The actors of the graph: feed, strategy, scorer, risk, execution, recorder."""
