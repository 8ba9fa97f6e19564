/**
 * Shared helpers of the gRPC transport tests: deadlines on every wait, and
 * certificates made with `openssl` for the TLS tests.
 *
 * @module
 */

export { eventually, within } from "../../wait.ts";

/** Runs a command; fails with its output if it exits non-zero, naming `install` if it is missing. */
export async function run(
  command: string,
  args: readonly string[],
  install: string,
  options: { cwd?: string } = {},
): Promise<string> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(command, {
      args: [...args],
      stdout: "piped",
      stderr: "piped",
      ...options,
    }).output();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(`${command} is not installed; install it with: ${install}`);
    }
    throw e;
  }
  const text = new TextDecoder();
  if (!out.success) {
    throw new Error(
      `${command} ${args.join(" ")} exited with ${out.code}:\n${text.decode(out.stdout)}${
        text.decode(out.stderr)
      }`,
    );
  }
  return text.decode(out.stdout);
}

/** PEM files of a test PKI, in a temporary directory. */
export interface TestPki {
  readonly dir: string;
  /** The CA that signed the server's and the client's certificates. */
  readonly caFile: string;
  /** Server certificate for 127.0.0.1, ::1 and localhost. */
  readonly serverCertFile: string;
  readonly serverKeyFile: string;
  /** Client certificate with subject CN `node-2`. */
  readonly clientCertFile: string;
  readonly clientKeyFile: string;
  /** A second, unrelated CA and a client certificate (CN `intruder`) it signed. */
  readonly otherCaFile: string;
  readonly otherClientCertFile: string;
  readonly otherClientKeyFile: string;
}

const OPENSSL = "apt-get install -y openssl";

/** Makes two CAs and the certificates of {@link TestPki} with `openssl` (EC P-256, 1 day). */
export async function makePki(): Promise<TestPki> {
  const dir = await Deno.makeTempDir({ prefix: "blixard-grpc-pki-" });
  const p = (name: string) => `${dir}/${name}`;
  const ossl = (...args: string[]) => run("openssl", args, OPENSSL, { cwd: dir });
  const key = (name: string) =>
    ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", p(name));
  for (const ca of ["ca", "other-ca"]) {
    await key(`${ca}.key`);
    await ossl(
      "req",
      "-x509",
      "-new",
      "-key",
      p(`${ca}.key`),
      "-subj",
      `/CN=blixard test ${ca}`,
      "-days",
      "1",
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
      "-out",
      p(`${ca}.pem`),
    );
  }
  const leaf = async (name: string, cn: string, ca: string, ext: string) => {
    await key(`${name}.key`);
    await ossl(
      "req",
      "-new",
      "-key",
      p(`${name}.key`),
      "-subj",
      `/CN=${cn}`,
      "-out",
      p(`${name}.csr`),
    );
    await Deno.writeTextFile(p(`${name}.ext`), ext);
    await ossl(
      "x509",
      "-req",
      "-in",
      p(`${name}.csr`),
      "-CA",
      p(`${ca}.pem`),
      "-CAkey",
      p(`${ca}.key`),
      "-CAcreateserial",
      "-days",
      "1",
      "-extfile",
      p(`${name}.ext`),
      "-out",
      p(`${name}.pem`),
    );
  };
  await leaf(
    "server",
    "node-1",
    "ca",
    "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
  );
  await leaf("client", "node-2", "ca", "extendedKeyUsage=clientAuth\n");
  await leaf("intruder", "intruder", "other-ca", "extendedKeyUsage=clientAuth\n");
  return {
    dir,
    caFile: p("ca.pem"),
    serverCertFile: p("server.pem"),
    serverKeyFile: p("server.key"),
    clientCertFile: p("client.pem"),
    clientKeyFile: p("client.key"),
    otherCaFile: p("other-ca.pem"),
    otherClientCertFile: p("intruder.pem"),
    otherClientKeyFile: p("intruder.key"),
  };
}
