"""The pytest plugin. (stub: in progress)"""
