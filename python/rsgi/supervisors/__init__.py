"""Parent processes that run rsgi servers in child processes."""
