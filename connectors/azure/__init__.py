"""Azure: role assignments and definitions, provider operations, the Activity Log, custom roles out."""
