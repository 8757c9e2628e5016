// npm run bench -- ext-proc: what the sidecar's ext_proc adds for a 4 KiB JSON body (see parts/ext-proc.ts).
import { report } from './lib.ts';
import { extProcFigures } from './parts/ext-proc.ts';

await report('ext-proc', await extProcFigures());
