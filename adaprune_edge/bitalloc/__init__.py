"""Bits where they matter: one ggml type per weight tensor, chosen under a device's budget.

sensitivity.py measures what every (tensor, type) costs: the imatrix-weighted error of llama.cpp's real
quantization; probe.py calibrates that error against KL to the dense model (one tensor quantized at a
time, in torch); solver.py picks the types (a Lagrangian relaxation plus a greedy fill) under every limit
the device states; recipe_file.py writes and reads the result next to the GGUF."""
