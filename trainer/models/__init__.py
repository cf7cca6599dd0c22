"""The classifiers (CIFAR ResNet-18, PreAct ResNet-18, a small CNN), built by name, and their files (safetensors
with metadata). Every model takes [0, 1] images and normalizes inside."""
