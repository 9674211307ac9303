import dream.project  # dream's tasks for the recipes under recipes/: `doit list --all`
globals().update(dream.project.dodo_globals())
