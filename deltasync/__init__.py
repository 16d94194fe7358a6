"""deltasync: send Alma only the patrons that changed."""
