"""Recipes: YAML files that describe images, validated and merged with their imports."""
