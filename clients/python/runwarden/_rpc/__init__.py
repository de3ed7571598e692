"""Generated private copies of google.rpc.Status and google.rpc.BadRequest (see proto/)."""
