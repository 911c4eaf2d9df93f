"""Fakes for what this machine cannot run (docker, kind, istioctl, kubectl, a Kubernetes API server)."""
