"""Model registry pages: lineage, deploy, roll back, disk use."""
