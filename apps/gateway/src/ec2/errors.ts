/**
 * An EC2 error as the Query API answers it: code (EC2's, e.g. "InvalidInstanceID.NotFound"), HTTP status and
 * a message naming the parameter and the fix. Rendered by the EC2 front as
 * <Response><Errors><Error><Code/><Message/></Error></Errors><RequestID/></Response>.
 */
export class Ec2Error extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly status = 400,
  ) {
    super(message);
  }
}
