"""A small built-in English/code corpus to train the local byte-level BPE tokenizer of random checkpoints."""

from __future__ import annotations

from collections.abc import Iterator

_PARAGRAPHS = (
    "Supernode is a Kubernetes control plane for serving very large mixture-of-experts language models on "
    "Ascend SuperNodes and NVIDIA GPU pools. One replica of a model spans several nodes, so the unit we deploy, "
    "place, restart, roll and route to is a replica group of pods.",
    "The router authenticates each request, resolves the model and the reasoning mode, admits it under the "
    "tenant's quota, scores the healthy endpoints by prefix-cache affinity and load, and proxies the stream.",
    "The engine keeps a paged key-value cache. Each block holds sixteen tokens; blocks are hashed in a chain "
    "seeded with the model name, so a prompt that shares a prefix with an earlier one reuses its cached blocks.",
    "Tensor parallelism splits every attention head and every feed-forward layer across devices; expert "
    "parallelism places whole experts on different devices and combines their outputs with an all-reduce.",
    "Question: what is the capital of France? Answer: Paris is the capital of France. Question: how many days "
    "are in a week? Answer: there are seven days in a week. Question: what is two plus three? Answer: five.",
    "The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step. "
    "All that glitters is not gold. Knowledge is power, and time is money, and practice makes perfect.",
    "def fibonacci(n: int) -> int:\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "for i in range(10):\n    print(i * i)\nclass Scheduler:\n    def __init__(self, max_num_seqs):\n"
    "        self.waiting = []\n        self.running = []\n",
    "apiVersion: supernode.io/v1alpha1\nkind: ModelDeployment\nmetadata:\n  name: v4-flash\nspec:\n"
    "  replicas: 2\n  parallelism:\n    tensor: 16\n    expert: 32\n",
    "Mathematics: the sum of the first n integers is n times n plus one over two. The derivative of x squared "
    "is two x. A prime number has exactly two divisors. Seventeen, nineteen and twenty-three are primes.",
    "Thinking step by step: first read the problem, then list what is known, then check each step, and finally "
    "give the answer. If the answer is uncertain, say so and explain why.",
    "Monday Tuesday Wednesday Thursday Friday Saturday Sunday. January February March April May June July "
    "August September October November December. One two three four five six seven eight nine ten.",
    "Hello! How can I help you today? Thank you for your question. Here is a short summary of the main points, "
    "followed by an example and a few suggestions for further reading.",
    "The weather today is sunny with a light breeze; tomorrow it will rain in the morning and clear up in the "
    "afternoon. Remember to bring an umbrella and a warm coat.",
    '{"model": "deepseek-v4-flash", "messages": [{"role": "user", "content": "Hi"}], "stream": true, '
    '"max_tokens": 128, "temperature": 0.7, "top_p": 0.95}',
)


def corpus(repeat: int = 8) -> Iterator[str]:
    """The corpus lines, repeated so frequent pairs dominate the merges."""
    for _ in range(repeat):
        yield from _PARAGRAPHS
