"""ONNX export with QuantizeLinear/DequantizeLinear, and graph inspection."""
