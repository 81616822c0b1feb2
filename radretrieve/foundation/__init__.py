"""Foundation layer: errors, ids, configs, the one file writer, the version. Imports nothing else of the project."""
