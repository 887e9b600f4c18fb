"""What users look at: figure builders, tables, the budget explorer, live views, computed conclusions, figure export."""
