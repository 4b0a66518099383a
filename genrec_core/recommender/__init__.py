"""The T5 generative recommender: vocabulary, model, losses, training and constrained decoding."""
