"""The ``gpu-partitions`` tools: inventory, demo, simulate, bench and
benchmark. They import the plugin packages; the plugins never import them."""
