"""Tools the chart and GitOps tests use: helm and a kstatus checker (Go modules), and the generator."""
