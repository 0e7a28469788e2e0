"""The lab's simulators, one module per template folder whose scripts it answers.

Each module declares its operations in its own ``OPERATIONS``; :mod:`cmrunbook_lab.interpreter`
joins them in a fixed order.
"""
