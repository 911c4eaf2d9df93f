"""The two implementations of ``labkit.lab.Lab``: ``local`` (real Envoy on 127.0.0.1, built from the engines
in ``labkit.local``) and ``kind`` (a real Istio mesh on kind or an existing cluster, from ``labkit.kind``).
They sit beside ``labkit.lab`` in the layers, above the engines they drive."""
