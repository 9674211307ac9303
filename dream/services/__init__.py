"""The compiled form of a deployment: the plan the supervisor runs (plan.py). The service model
itself is recipe loading (dream/recipe/services.py, services_schema.py); the tasks that render
and run a deployment are in dream/tasks/services.py."""
