// Reads a JSON array of strings on stdin; prints a JSON array of their LLaMA-2 token counts (no BOS).
import llamaTokenizer from "llama-tokenizer-js";

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const texts = JSON.parse(input);
  const counts = texts.map((text) => llamaTokenizer.encode(text, false, true).length);
  process.stdout.write(JSON.stringify(counts));
});
