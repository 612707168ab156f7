"""How nodes find each other (issue 14 step 1): peers and their Scheduler-Location records."""
