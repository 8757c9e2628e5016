// Entry point of the portcullis and kubectl-portcullis binaries.
import { processIo } from './io.ts';
import { run } from './run.ts';

// A reader that stops early (portcullis eval ... | head -1) closes the pipe:
// what is left to print is dropped, quietly, as Unix tools do, and the exit
// status stays the command's own.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPIPE') throw error;
  });
}

process.exitCode = await run(process.argv.slice(2), processIo);
