"""Optional integrations, each enabled by the project (they import packages djqueue does not
require)."""
