// Publish one invocation as raw JSON with reply_to, receive its completion on a queue of our own, read its status
// over HTTP. docs/wire-format.md explains each step. Needs Node.js 18+ and amqplib (npm ci). Usage:
//
//   node publish_raw.mjs [AMQP_URL] [HTTP_URL] [TASK] [ARGUMENTS_JSON]
//   node publish_raw.mjs amqp://guest:guest@127.0.0.1:5682/ http://127.0.0.1:5690 echo '{"hello":"world"}'
//
// Prints two JSON lines, the completion and then the status report; exits 0 only if the invocation Succeeded.
import { randomUUID } from "node:crypto";
import amqp from "amqplib";

const INVOCATIONS = "RunnerService.Contracts:RunInvocation"; // publish here (fanout: the routing key is ignored)

const [url = "amqp://guest:guest@127.0.0.1:5682/", httpArg = "http://127.0.0.1:5690", task = "echo", argumentsJson] = process.argv.slice(2);
const http = httpArg.replace(/\/+$/, "");
const args = argumentsJson ? JSON.parse(argumentsJson) : { hello: "from node" };

const connection = await amqp.connect(url);
const channel = await connection.createConfirmChannel();

// 1. A queue of our own for the reply: the broker names it, and it goes away with this process.
const { queue: replyQueue } = await channel.assertQueue("", { exclusive: true, autoDelete: true });
const reply = new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error("no completion within 120 s")), 120_000);
  channel.consume(replyQueue, (message) => {
    clearTimeout(timer);
    resolve(JSON.parse(message.content.toString("utf8"))); // the raw event object (application/json)
  }, { noAck: true });
});

// 2. Publish the RunInvocation object itself: content type application/json, persistent, reply_to our queue.
const invocationId = randomUUID();
const invocation = { invocationId, taskName: task, arguments: args, timeout: 60 };
channel.publish(INVOCATIONS, "", Buffer.from(JSON.stringify(invocation)), {
  contentType: "application/json",
  persistent: true,
  replyTo: replyQueue,
});
await channel.waitForConfirms(); // the broker has it

// 3. The completion.
const completed = await reply;
await connection.close();
console.log(JSON.stringify(completed));

// 4. The saga's record over HTTP. It records the completion a moment after it is sent: poll until it shows.
let report = null;
for (let i = 0; i < 100; i++) {
  const response = await fetch(`${http}/invocations/${invocationId}`);
  if (response.ok) {
    report = await response.json();
    if (report.status === completed.status) break;
  } else if (response.status !== 404) {
    throw new Error(`GET /invocations/${invocationId}: ${response.status}`);
  }
  await new Promise((resolve) => setTimeout(resolve, 200));
}
console.log(JSON.stringify(report));
process.exit(completed.status === "Succeeded" && report !== null ? 0 : 1);
