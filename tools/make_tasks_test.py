"""tools/make_tasks.py on a tokenizer built here: exact lengths, answers inside the prompt, same
seed same file. Skips where Hugging Face tokenizers is not installed."""
import json
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))

try:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
except ImportError:
    Tokenizer = None

TEXT = ("It was a bright cold day in April, and the clocks were striking thirteen. " * 40 +
        "The quick brown fox jumps over the lazy dog. 0123456789 pass key magic number special: . ? - " * 20)


@unittest.skipIf(Tokenizer is None, "Hugging Face tokenizers is not installed")
class MakeTasksTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        tok = Tokenizer(models.BPE(unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator([TEXT], trainers.BpeTrainer(vocab_size=300, special_tokens=["[UNK]"],
                                                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        self.tokenizer = os.path.join(self.dir, "tokenizer.json")
        tok.save(self.tokenizer)
        self.haystack = os.path.join(self.dir, "haystack.txt")
        with open(self.haystack, "w") as f:
            f.write(TEXT)

    def run_tool(self, out, seed=0):
        subprocess.run([sys.executable, os.path.join(HERE, "make_tasks.py"), "--tokenizer", self.tokenizer,
                        "--haystack", self.haystack, "--out", out, "--lengths", "500,900", "--depths", "0,0.5,1",
                        "--seed", str(seed)], check=True, capture_output=True)
        with open(out) as f:
            return [json.loads(line) for line in f]

    def test_lengths_answers_and_determinism(self):
        tasks = self.run_tool(os.path.join(self.dir, "a.jsonl"))
        self.assertEqual(len(tasks), 3 * 2 * 3 * 2)
        self.assertEqual({t["kind"] for t in tasks}, {"passkey", "niah", "kv"})
        tok = Tokenizer.from_file(self.tokenizer)
        for t in tasks:
            self.assertEqual(len(t["prompt"]), t["context"])
            self.assertTrue(t["answer"])
            # The answer's digits appear in the prompt's text: the task is answerable.
            self.assertIn(t["answer_text"].strip(), tok.decode(t["prompt"]))
        self.assertEqual(tasks, self.run_tool(os.path.join(self.dir, "b.jsonl")))
        self.assertNotEqual(tasks, self.run_tool(os.path.join(self.dir, "c.jsonl"), seed=1))


if __name__ == "__main__":
    unittest.main()
