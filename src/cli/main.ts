// Entry point of the portcullis and kubectl-portcullis binaries.
import { processIo } from './io.ts';
import { run } from './run.ts';

process.exitCode = await run(process.argv.slice(2), processIo);
