"""SEAL's second domain: learning a task from a few examples (ARC). The model writes a training recipe (a self-edit
that says how to train, not what to learn); the recipe runs as test-time training on the task's own examples; the
adapted model answers the test input under several views of the grid, voted.

tasks.py reads and checks tasks and turns grids into text and back; recipes.py is the self-edit; solve.py trains and
predicts.
"""
