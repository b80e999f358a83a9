// BlockRun's TypeScript SDK (@blockrun/llm) against the sandbox gateway (issue 12): it must read the
// catalog, pay chats on models BlockRun lists, and show the gateway's explanation of a 400.
// Run by .ci/ts-sdk-check.sh, which installs the SDK next to a copy of this file and sets
// SANDBOX_API_URL (http://127.0.0.1:PORT/api) and SANDBOX_PRIVATE_KEY (a throwaway 0x key).
import { APIError, LLMClient } from "@blockrun/llm";

const apiUrl = process.env.SANDBOX_API_URL;
const privateKey = process.env.SANDBOX_PRIVATE_KEY;
// The two models the issue names, at the prices BlockRun's Models page lists (USD per 1M tokens).
const PAID = [
  ["openai/gpt-5.4-nano", 0.05, 0.4],
  ["anthropic/claude-sonnet-4.6", 3, 15],
];

function check(ok, what) {
  if (!ok) {
    console.error(`ts-sdk-check: FAILED: ${what}`);
    process.exit(1);
  }
}

async function sandboxState() {
  const origin = apiUrl.replace(/\/api$/, "");
  return (await fetch(`${origin}/_sandbox/state`)).json();
}

async function checkCatalog(client) {
  const models = await client.listModels(); // reads `data` from /v1/models
  const byId = new Map(models.map((m) => [m.id, m]));
  check(models.length >= 50, `listModels() gave ${models.length} models`);
  for (const [id, input, output] of PAID) {
    const model = byId.get(id);
    check(model, `listModels() has no ${id}`);
    check(
      model.inputPrice === input && model.outputPrice === output,
      `${id} is priced ${model.inputPrice}/${model.outputPrice}, not ${input}/${output}`,
    );
  }
  const images = await client.listImageModels();
  const pro = images.find((m) => m.id === "google/nano-banana-pro");
  check(pro && pro.pricePerImage === 0.105, `listImageModels(): ${JSON.stringify(pro)}`);
  console.log(`  listModels: ${models.length} models; listImageModels: ${images.length} models`);
}

async function checkPaidChats(client) {
  const before = (await sandboxState()).counts.settlements;
  for (const [model] of PAID) {
    const messages = [{ role: "user", content: "Hello from the TypeScript SDK" }];
    const reply = await client.chatCompletion(model, messages, { maxTokens: 64 });
    const content = reply.choices[0].message.content;
    check(content.startsWith(`[sandbox ${model}]`), `${model} answered ${JSON.stringify(content)}`);
    console.log(`  chatCompletion ${model}: paid, answered ${JSON.stringify(content.slice(0, 40))}...`);
  }
  const settled = (await sandboxState()).counts.settlements - before;
  check(settled === PAID.length, `${settled} settlements for ${PAID.length} paid chats`);
  check(client.sessionTotalUsd > 0, `the SDK counted $${client.sessionTotalUsd} spent`);
}

async function checkErrorMessage(client) {
  // openai/gpt-5-nano is not on BlockRun's pages: the gateway says so in `message`.
  try {
    await client.chatCompletion("openai/gpt-5-nano", [{ role: "user", content: "Hello" }]);
  } catch (error) {
    check(error instanceof APIError && error.statusCode === 400, `not a 400 APIError: ${error}`);
    const detail = error.response?.detail ?? "";
    check(
      detail.includes("unknown model 'openai/gpt-5-nano'"),
      `the SDK's error carries no explanation: ${JSON.stringify(error.response)}`,
    );
    console.log(`  a 400: ${error.message}; detail: ${detail}`);
    return;
  }
  check(false, "a chat on an unlisted model succeeded");
}

check(apiUrl && privateKey, "set SANDBOX_API_URL and SANDBOX_PRIVATE_KEY");
const client = new LLMClient({ privateKey, apiUrl });
await checkCatalog(client);
await checkPaidChats(client);
await checkErrorMessage(client);
console.log("ts-sdk-check: ok");
