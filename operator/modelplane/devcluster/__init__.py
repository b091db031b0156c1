"""A local Kubernetes control plane built from upstream Go modules, with KWOK fake GPU nodes."""
