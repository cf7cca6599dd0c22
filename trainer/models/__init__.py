"""The classifiers (CIFAR ResNet-18, PreAct ResNet-18, a small CNN, the published wide ResNets), built by name, their
files (safetensors with metadata) and RobustBench zoo interchange. Every model takes [0, 1] images and normalizes
inside."""
