"""Memory pages: which pages a (pre-)dump saves, which it leaves in its parent images,
how it copies them, and, at restore, where each page of a chain of image folders is.

A dump or pre-dump given ``--prev-images-dir`` (its *parent*) saves only the
pages that changed since the parent was taken, or that the parent does not
have; the others are recorded as ``in_parent`` (runs of ``[vaddr, npages]``)
and a restore reads them from the parent's pages file, or from its parent's,
and so on. Two ways tell a page that did not change:

* **soft-dirty** (``CONFIG_MEM_SOFT_DIRTY``): the parent cleared the
  soft-dirty bits (``echo 4 > /proc/PID/clear_refs``) once it had chosen its
  pages, still frozen; a page whose pagemap bit 55 is still clear was not
  written since.
  Only the last ``--track-mem`` dump of a process may serve as the parent:
  ckpt keeps the token of the last clear in ``/run/ckpt/soft-dirty/PID``,
  and a parent whose token is not the current one (another dump cleared the
  bits since, or failed after clearing them) gives a full dump.
* **digest** (kernels without soft-dirty): the parent recorded a SHA-256
  (first 16 bytes) of every page it has (``digests-PID.img``); the dump
  hashes every page and leaves in the parent those whose digest is the same.
  A dump reads every page while the process is frozen, but writes or sends
  only the changed ones. It does not depend on what happened in between.

A pre-dump only chooses its pages while the processes are frozen, and copies
them once they run again (``resources.mem.PreDumpTask``): a page written meanwhile is
soft-dirty again, or its digest is that of the bytes saved, not of what it
holds at the next dump, so the next dump saves it again either way.

Either way a page is left in the parent only if the parent has that address
in a mapping of the same identity (kind, path, shared, file offset at that
address). Shared anonymous memory is never left in a parent: a dump saves it
whole, a pre-dump not at all. ``CKPT_TRACK_MEM=soft-dirty|digest`` forces a
method (for tests); with ``soft-dirty`` on a kernel without it, ``--track-mem``
has no effect and the next dump is full.

Page data goes from the target to reused buffers (``process_vm_readv``,
or ``/proc/PID/mem`` for unreadable mappings) and from there to the image
file (written by a thread behind the copy, ``behind``) or the page server,
or, for a big process dumped to a local folder, from the process through a
pipe into the image file (``splice``): it never becomes Python objects.

The modules, lowest first (imports point down; this package is below resources/,
whose mem.py uses it, and above kernel/ and images.py):

* ``runs``: runs of pages ``[vaddr, npages]``, appended and merged;
* ``select``: pure selection, pagemap bytes and the parent's cover in, a status
  per page out;
* ``tracking``: soft-dirty or digests, and the token of the last soft-dirty clear;
* ``parent``: the parent images of a dump, and what each process has there;
* ``buffer``: the page-data buffers, kept for the life of the process;
* ``behind``: the pages file written by a thread of its own, behind the copy;
* ``splice``: the pages a process moves itself into the pages file (vmsplice, splice);
* ``save``: choosing and copying the pages of each process of a (pre-)dump;
* ``chain``: at restore, the chain of parent images and where each page is;
* ``fill``: at restore, each pages file read once, checksummed on the way, and
  written into the restored process (``process_vm_writev``).
"""
