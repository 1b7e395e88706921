"""What cohort tells about itself: structured events and statistics records.

Private: users import these names from ``cohort``.
"""
