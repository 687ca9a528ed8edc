"""One config section per stage, named as the stage's module in tasks/."""
