"""The Tutti web console: a client of the public gateway for head office and store teams."""
