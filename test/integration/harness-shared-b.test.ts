// With harness-shared-a.test.ts: two files see one and the same control plane.

import { it } from 'vitest';
import { expectTheRunsOnlyControlPlane } from '../harness/shared-instance.ts';

it('uses the control plane the run started once', expectTheRunsOnlyControlPlane);
